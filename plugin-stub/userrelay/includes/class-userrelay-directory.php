<?php
/**
 * The directory: this site's users, page by page in user ID order, as the relay's initial sync
 * (and anything else that lists users) reads them.
 *
 * Each user is the protocol's "user" object (UserRelay_Snapshot::fields) with the stored
 * password hash, the roles, every meta key not deny-listed, and "modified": when the user's
 * data here last changed (UserRelay_Modified), and "versions": the version of each
 * field group (UserRelay_Versions), one per meta key listed. Users that are not reported
 * (UserRelay_Snapshot::reported: privileged ones unless USERRELAY_SYNC_PRIVILEGED, other blogs'
 * on a network) are left out, as they are from live events. Reads only; never writes.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Lists users for the relay.
 */
final class UserRelay_Directory {

	/** Largest page the relay may ask for. */
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
	 * One page: users with an ID above $after, at most $limit, ID ascending.
	 *
	 * @param int $after Last user ID of the previous page (0 for the first).
	 * @param int $limit Page size.
	 * @return array{users: array[], next: int|null, scanned: int, total: int}
	 */
	public function page( int $after, int $limit ): array {
		global $wpdb;
		$limit    = max( 1, min( self::MAX_LIMIT, $limit ) );
		$scan     = $this->scan( $after, $limit );
		$ids      = $scan['ids'];
		$snapshot = new UserRelay_Snapshot( $this->settings );
		$users    = array();
		foreach ( $scan['users'] as $user_id => list( $user, $hash ) ) {
			$fields                  = $snapshot->fields( $user );
			$fields['password_hash'] = $hash;
			$fields['meta']          = (object) $this->meta( $user_id );
			$fields['modified']      = round( UserRelay_Modified::of( $user ), 6 );
			$fields['versions']      = (object) UserRelay_Versions::expanded( UserRelay_Stored_Versions::of( $user ), array_map( 'strval', array_keys( (array) $fields['meta'] ) ) );
			$users[]                 = $fields;
		}
		$last = $ids ? end( $ids ) : null;
		$more = null !== $last && count( $ids ) === $limit && (int) $wpdb->get_var( $wpdb->prepare( "SELECT COUNT(*) FROM {$wpdb->users} WHERE ID > %d", $last ) ) > 0;
		return array(
			'users'   => $users,
			'next'    => $more ? $last : null,
			'scanned' => count( $ids ), // Users looked at, those left out included.
			'total'   => (int) $wpdb->get_var( "SELECT COUNT(*) FROM {$wpdb->users}" ),
		);
	}

	/**
	 * The users a page looks at (IDs above $after, at most $limit, ID ascending) and, of those,
	 * the ones this site syncs (privileged users and other blogs' left out), each with its stored
	 * password hash. Two queries for the whole page: the IDs with their hashes, then
	 * cache_users() for the users and all their meta. The initial sync and the digests read
	 * users through this.
	 *
	 * @param int $after Last user ID of the previous page (0 for the first).
	 * @param int $limit Page size (already bounded by the caller).
	 * @return array{ids: int[], users: array<int, array{0: WP_User, 1: string}>}
	 */
	public function scan( int $after, int $limit ): array {
		global $wpdb;
		$rows = $wpdb->get_results( $wpdb->prepare( "SELECT ID, user_pass FROM {$wpdb->users} WHERE ID > %d ORDER BY ID LIMIT %d", $after, $limit ), OBJECT_K );
		$ids  = array_map( 'intval', array_keys( $rows ) );
		if ( $ids ) {
			cache_users( $ids );
		}
		$snapshot = new UserRelay_Snapshot( $this->settings );
		$users    = array();
		foreach ( $ids as $user_id ) {
			$user = get_userdata( $user_id );
			if ( $user && $snapshot->reported( $user ) ) {
				$users[ $user_id ] = array( $user, (string) $rows[ $user_id ]->user_pass );
			}
		}
		return array(
			'ids'   => $ids,
			'users' => $users,
		);
	}

	/**
	 * The user's meta that may be synced: syncable (not protected or denied), not core's profile keys (sent as
	 * fields), not the roles (sent as roles). Several values of a key as live events send them.
	 *
	 * @param int $user_id User id.
	 * @return array<string, mixed>
	 */
	public function meta( int $user_id ): array {
		$meta = array();
		foreach ( (array) get_user_meta( $user_id ) as $key => $values ) {
			$key = (string) $key;
			if ( in_array( $key, UserRelay_Facts::PROFILE_META_FIELDS, true ) || $this->settings->is_meta_denied( $key ) ) {
				continue;
			}
			$meta[ $key ] = UserRelay_Meta_Values::encode( array_map( 'maybe_unserialize', (array) $values ) );
		}
		// The keys a developer keeps on this site (userrelay_outgoing_meta_keys) stay here.
		return array_intersect_key( $meta, array_flip( UserRelay_Developer_Hooks::outgoing_meta_keys( array_map( 'strval', array_keys( $meta ) ), $user_id ) ) );
	}
}
