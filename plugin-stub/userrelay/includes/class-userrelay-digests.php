<?php
/**
 * Reconciliation: digests of the synced fields of each user, page by page, and full snapshots.
 *
 * The relay compares two sites by asking each for its users in user id order, a page at a time:
 * the match keys (id, email, login), one sha256 digest per field group (profile, roles, password,
 * meta) in a canonical form, and the per-user modification time (UserRelay_Modified:
 * the usermeta userrelay_modified, else user_registered), with the version of each field group
 * (UserRelay_Versions: which side holds the newer change). Where digests differ it asks for full
 * snapshots of those users (UserRelay_Directory's) to build repair events. Read only.
 *
 * Canonical form of a group: the JSON (no escaped slashes or unicode) of its value, object keys
 * sorted; profile is an object of email and the profile fields, roles a sorted list, password
 * the stored hash, meta an object of key to value (several values as events carry them), of
 * the keys that may be synced (or of those the relay names, less any that may not: a protected
 * key is never digested) and that this site sends (userrelay_outgoing_meta_keys).
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Answers the digests and snapshots routes.
 */
final class UserRelay_Digests {

	const MAX_LIMIT = 1000;

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 */
	public function __construct( UserRelay_Settings $settings ) {
		$this->settings = $settings;
	}

	/**
	 * Parses "profile,roles,meta:k1,k2" into [groups, meta keys or null for every key].
	 *
	 * @param string $fields The fields parameter.
	 * @return array{0: string[], 1: string[]|null}
	 */
	public static function parse_fields( string $fields ): array {
		$groups    = array();
		$meta_keys = null;
		$parts     = explode( ',', $fields );
		$in_meta   = false;
		foreach ( $parts as $part ) {
			$part = trim( $part );
			if ( 0 === strpos( $part, 'meta:' ) ) {
				$groups[]  = 'meta';
				$meta_keys = array();
				$in_meta   = true;
				$part      = substr( $part, 5 );
				if ( '' !== $part ) {
					$meta_keys[] = $part;
				}
				continue;
			}
			if ( in_array( $part, UserRelay_Facts::DIGEST_GROUPS, true ) ) {
				$groups[] = $part;
				$in_meta  = false;
			} elseif ( $in_meta && '' !== $part ) {
				$meta_keys[] = $part; // A key of the meta list (keys follow "meta:").
			}
		}
		return array( array_values( array_unique( $groups ) ), $meta_keys );
	}

	/**
	 * One page of digests: users with an id above $after, at most $limit of them scanned.
	 *
	 * @param int    $after  Last id of the previous page (0 to start).
	 * @param int    $limit  Page size.
	 * @param string $fields Field groups (see parse_fields).
	 * @return array{users: array[], next: int|null}
	 */
	public function page( int $after, int $limit, string $fields ): array {
		list( $groups, $meta_keys ) = self::parse_fields( $fields );
		$limit                      = max( 1, min( self::MAX_LIMIT, $limit ) );
		$scan                       = ( new UserRelay_Directory( $this->settings ) )->scan( $after, $limit );
		$ids                        = $scan['ids'];
		$snapshot                   = new UserRelay_Snapshot( $this->settings );
		$users                      = array();
		foreach ( $scan['users'] as $user_id => list( $user, $hash ) ) {
			$values  = $this->groups( $snapshot->fields( $user ), $hash, $meta_keys );
			$digests = array();
			foreach ( $groups as $group ) {
				$digests[ $group ] = hash( 'sha256', self::canonical( $values[ $group ] ) );
			}
			$users[] = array(
				'id'       => $user_id,
				'email'    => (string) $user->user_email,
				'login'    => (string) $user->user_login,
				'modified' => round( UserRelay_Modified::of( $user ), 6 ),
				'digest'   => hash( 'sha256', implode( ',', $digests ) ),
				'digests'  => (object) $digests,
				// Which side holds the newer change of a group that differs (UserRelay_Versions).
				'versions' => (object) UserRelay_Versions::expanded( UserRelay_Stored_Versions::of( $user ), array_map( 'strval', array_keys( $values['meta'] ) ) ),
			);
		}
		return array(
			'users' => $users,
			'next'  => count( $ids ) < $limit ? null : end( $ids ),
		);
	}

	/**
	 * Full snapshots of the given users that exist and are synced: the directory's users
	 * (UserRelay_Directory, as the initial sync reads them), with "modified".
	 *
	 * @param int[] $ids User ids.
	 * @return array[]
	 */
	public function snapshots( array $ids ): array {
		$directory = new UserRelay_Directory( $this->settings );
		$users     = array();
		foreach ( array_slice( array_unique( array_filter( array_map( 'intval', $ids ) ) ), 0, self::MAX_LIMIT ) as $user_id ) {
			$page = $directory->page( $user_id - 1, 1 ); // The page starting at this very user.
			if ( $page['users'] && (int) $page['users'][0]['id'] === $user_id ) {
				$users[] = $page['users'][0];
			}
		}
		return $users;
	}

	/**
	 * The values of the field groups of a user.
	 *
	 * @param array         $fields    The protocol's user object (UserRelay_Snapshot::fields).
	 * @param string        $hash      The stored password hash.
	 * @param string[]|null $meta_keys Meta keys compared (null: every key that may be synced).
	 */
	private function groups( array $fields, string $hash, ?array $meta_keys ): array {
		$profile = array( 'email' => $fields['email'] );
		foreach ( UserRelay_Profile::edited() as $name ) {
			$profile[ $name ] = $fields[ $name ];
		}
		$roles = $fields['roles'];
		sort( $roles );
		$meta = array();
		foreach ( (array) get_user_meta( $fields['id'] ) as $key => $values ) {
			$key = (string) $key;
			if ( $this->settings->is_meta_denied( $key ) ) {
				continue; // Never digested, even when the relay names the key.
			}
			$pick = null !== $meta_keys ? in_array( $key, $meta_keys, true ) : ! in_array( $key, UserRelay_Facts::PROFILE_META_FIELDS, true );
			if ( $pick ) {
				$meta[ $key ] = UserRelay_Meta_Values::encode( array_map( 'maybe_unserialize', (array) $values ) );
			}
		}
		// Only what this site sends is compared (userrelay_outgoing_meta_keys).
		$meta = array_intersect_key( $meta, array_flip( UserRelay_Developer_Hooks::outgoing_meta_keys( array_map( 'strval', array_keys( $meta ) ), (int) $fields['id'] ) ) );
		return array(
			'profile'  => $profile,
			'roles'    => $roles,
			'password' => $hash,
			'meta'     => $meta,
		);
	}

	/**
	 * The canonical JSON of a group's value: object keys sorted, slashes and unicode unescaped.
	 *
	 * @param mixed $value The value.
	 */
	public static function canonical( $value ): string {
		return (string) wp_json_encode( self::sorted( $value ), JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE );
	}

	/**
	 * $value with the keys of every associative array sorted; empty arrays of meta as objects.
	 *
	 * @param mixed $value The value.
	 * @return mixed
	 */
	private static function sorted( $value ) {
		if ( ! is_array( $value ) ) {
			return $value;
		}
		if ( array() === $value || wp_is_numeric_array( $value ) && array_keys( $value ) === range( 0, count( $value ) - 1 ) ) {
			return array_map( array( self::class, 'sorted' ), $value );
		}
		ksort( $value );
		return (object) array_map( array( self::class, 'sorted' ), $value );
	}
}
