<?php
/**
 * One delivered event's changes, made to its user: finds the user (UserRelay_User_Match),
 * decides which field groups apply, checks them (UserRelay_Delivery_Checks) before anything is
 * written, then has the writers write them (UserRelay_User_Writer, UserRelay_Meta_Writer).
 *
 * A delivery with versions applies each field group only where its version is newer than the
 * one the user holds here (docs/adr/0011-convergent-versions.md); one without versions (an
 * older relay or plugin) applies as it says. The transaction, the claim of the event and the
 * answer belong to UserRelay_Applier, which reads back what the event touched, skipped and
 * observed.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Applies one event's actions to its user.
 */
final class UserRelay_Event_Changes {

	/**
	 * Checks run before writing.
	 *
	 * @var UserRelay_Delivery_Checks
	 */
	private $checks;

	/**
	 * Writes the user's row, roles and deletion.
	 *
	 * @var UserRelay_User_Writer
	 */
	private $writer;

	/**
	 * Writes the user's meta.
	 *
	 * @var UserRelay_Meta_Writer
	 */
	private $meta;

	/**
	 * Versions applied by the event in progress, moved into the site's clock once it committed.
	 *
	 * @var string[]
	 */
	private $observed = array();

	/**
	 * Groups the event in progress skipped as older than what the user holds here.
	 *
	 * @var string[]
	 */
	private $skipped = array();

	/**
	 * The local user the event in progress touches, so a rollback can clean its caches.
	 *
	 * @var int
	 */
	private $touched = 0;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings        $settings Settings.
	 * @param UserRelay_Delivery_Checks $checks   Checks run before writing.
	 */
	public function __construct( UserRelay_Settings $settings, UserRelay_Delivery_Checks $checks ) {
		$this->checks = $checks;
		$this->writer = new UserRelay_User_Writer( $checks );
		$this->meta   = new UserRelay_Meta_Writer( $settings );
	}

	/**
	 * Forgets the previous event: called before each event.
	 */
	public function reset(): void {
		$this->touched  = 0;
		$this->observed = array();
		$this->skipped  = array();
	}

	/**
	 * The local user the event touched (0: none yet).
	 */
	public function touched(): int {
		return $this->touched;
	}

	/**
	 * The versions the event applied.
	 *
	 * @return string[]
	 */
	public function observed(): array {
		return $this->observed;
	}

	/**
	 * The field groups the event left as they were (older than this site's).
	 *
	 * @return string[]
	 */
	public function skipped(): array {
		return $this->skipped;
	}

	/**
	 * Applies the event's actions to the matched (or a new) user.
	 *
	 * @param array $event A checked event.
	 * @return array{0: int, 1: int} Status and local user id.
	 * @throws UserRelay_Apply_Exception When the event cannot be applied.
	 */
	public function apply( array $event ): array {
		$actions       = $event['actions'];
		$data          = $event['user'];
		$match         = isset( $event['match'] ) && is_array( $event['match'] ) ? $event['match'] : array();
		$user          = UserRelay_User_Match::find( $data, $match );
		$this->touched = $user ? $user->ID : 0;
		// On a network, a create (or create_missing) matching a network user of another blog
		// adds them to this one; anything else about them is refused.
		$joining = $user && $this->checks->joins( $user, $event );
		if ( $user && ! $joining && in_array( 'delete', $actions, true ) && ! $this->checks->is_member( $user ) ) {
			$user          = null; // Not on this blog: already as the delete wants it.
			$this->touched = 0;
		}
		if ( $user && ! $joining ) {
			$this->checks->member( $user, $data['login'] );
		}
		$versions = self::versions( $event );
		if ( null !== $versions ) {
			return $this->apply_versioned( $event, $user, $versions, $match, $joining );
		}
		// A delivery without versions (an older relay or plugin): applied as it says.
		if ( in_array( 'delete', $actions, true ) ) {
			return array( 200, $user ? $this->writer->delete( $user, $data['login'] ) : 0 );
		}
		if ( $user && ! empty( $event['backfill'] ) && isset( $event['occurred_at'] ) && is_numeric( $event['occurred_at'] ) && UserRelay_Modified::of( $user ) > (float) $event['occurred_at'] ) {
			// Initial sync: this user changed here after the source's snapshot was taken; the
			// newer data stays (docs/adr/0006-initial-sync.md). Answered 200: nothing to retry.
			return array( 200, $user->ID );
		}
		$roles = in_array( 'roles', $actions, true ) ? $this->checks->roles( $data ) : null;
		$hash  = in_array( 'password', $actions, true ) ? $this->checks->hash( $data ) : null;
		if ( in_array( 'metadata', $actions, true ) ) {
			$this->checks->meta( $data );
		}
		$this->checks->not_privileged( $user, $roles, $data['login'] );
		$status = 200;
		if ( $joining ) {
			$this->writer->join_blog( $user, $roles );
			$status = 201;
		}
		if ( ! $user ) {
			$user   = $this->create_missing( $event, $data, $actions, $roles, $hash );
			$status = 201;
		} elseif ( array_intersect( array( 'create', 'edit' ), $actions ) ) {
			$this->writer->update_profile( $user, $data, ! self::keeps( $event, 'email' ), true, $match );
		}
		$this->writer->write_hash( $user->ID, $hash );
		$this->writer->write_roles( $user->ID, $roles );
		if ( in_array( 'metadata', $actions, true ) ) {
			$this->meta->apply( $user->ID, $data );
		}
		if ( isset( $event['occurred_at'] ) && is_numeric( $event['occurred_at'] ) ) {
			// The user now holds the source's data as of then (what an initial sync compares).
			UserRelay_Modified::record( $user->ID, (float) $event['occurred_at'] );
		}
		return array( $status, $user->ID );
	}

	/**
	 * The delivery's versions (group => version), or null for a delivery without them.
	 *
	 * @param array $event A checked event.
	 * @throws UserRelay_Apply_Exception When they are malformed.
	 */
	private static function versions( array $event ): ?array {
		if ( ! isset( $event['versions'] ) ) {
			return null;
		}
		if ( ! is_array( $event['versions'] ) ) {
			throw new UserRelay_Apply_Exception( 'versions: expected an object of field group to version', 422 );
		}
		foreach ( $event['versions'] as $group => $version ) {
			if ( null === UserRelay_Versions::parse( $version ) ) {
				throw new UserRelay_Apply_Exception( sprintf( 'versions.%s: expected a version such as "1764250000125.0@shop"', (string) $group ), 422 );
			}
		}
		return $event['versions'];
	}

	/**
	 * Applies a delivery that carries versions: each field group only where its version is
	 * newer than the one the user holds here; a delete unless the user here is a newer
	 * incarnation; nothing for a person deleted here after the delivery's incarnation was
	 * created (docs/adr/0011-convergent-versions.md).
	 *
	 * @param array        $event    A checked event.
	 * @param WP_User|null $user     The local user, if found.
	 * @param array        $versions The delivery's versions.
	 * @param array        $match    The event's match.
	 * @param bool         $joining  Whether a network user joins this blog (UserRelay_Delivery_Checks::joins).
	 * @return array{0: int, 1: int} Status (UserRelay_Applier::STALE when nothing was newer) and user id.
	 * @throws UserRelay_Apply_Exception When the event cannot be applied.
	 */
	private function apply_versioned( array $event, ?WP_User $user, array $versions, array $match, bool $joining = false ): array {
		$actions = $event['actions'];
		$data    = $event['user'];
		$created = $versions['created'] ?? UserRelay_Facts::MIN_VERSION;
		// A push or pull link: the source wins over this site's own changes (never over a
		// newer change of its own).
		$source_wins = ! empty( $event['source_wins'] );
		if ( in_array( 'delete', $actions, true ) ) {
			$deleted = $versions['delete'] ?? UserRelay_Facts::MIN_VERSION;
			if ( $user ) {
				$held = UserRelay_Versions::held( UserRelay_Stored_Versions::stored( $user->ID ), 'created', UserRelay_Stored_Versions::implied_of( $user ) );
				if ( ! UserRelay_Versions::delete_applies( $held, $deleted ) ) {
					$this->skipped = array( 'created' );
					return array( UserRelay_Applier::STALE, $user->ID ); // Created here again after that delete.
				}
			}
			UserRelay_Stored_Versions::bury( $data['email'], $data['login'], $deleted );
			$this->observed[] = $deleted;
			return array( 200, $user ? $this->writer->delete( $user, $data['login'] ) : 0 );
		}
		$groups = self::carried_groups( $actions, $data );
		if ( ! $user ) {
			$by   = UserRelay_User_Match::by_login( $data, $match ) ? 'login' : 'email';
			$gone = UserRelay_Stored_Versions::gone( $by, $data[ $by ] );
			if ( ! $source_wins && null !== $gone && ! UserRelay_Versions::revives( $created, $gone ) ) {
				$this->skipped = $groups;
				return array( UserRelay_Applier::STALE, 0 ); // That person was deleted here after this account began.
			}
			$stored = array_fill_keys( UserRelay_Facts::VERSION_GROUPS, UserRelay_Facts::MIN_VERSION );
			$apply  = $groups;
		} else {
			$stored        = UserRelay_Stored_Versions::stored( $user->ID );
			$implied       = UserRelay_Stored_Versions::implied_of( $user );
			$decision      = UserRelay_Versions::decide( $groups, $versions, $stored, $implied, $source_wins );
			$apply         = $decision['apply'];
			$stored        = null === $stored ? UserRelay_Versions::materialize( $implied ) : $stored;
			$this->skipped = $decision['skip'];
			if ( ! $apply && ! $joining ) {
				return array( UserRelay_Applier::STALE, $user->ID );
			}
		}
		$roles = in_array( 'roles', $apply, true ) ? $this->checks->roles( $data ) : null;
		$hash  = in_array( 'password', $apply, true ) ? $this->checks->hash( $data ) : null;
		if ( in_array( 'metadata', $actions, true ) ) {
			$this->checks->meta( $data );
		}
		$this->checks->not_privileged( $user, $roles, $data['login'] );
		$status = 200;
		if ( $joining ) {
			// Before any write: the user's roles here, then what the delivery carries newer.
			$this->writer->join_blog( $user, in_array( 'roles', $actions, true ) ? $this->checks->roles( $data ) : null );
			$status = 201;
		}
		if ( ! $user ) {
			$user   = $this->create_missing( $event, $data, $actions, $roles, $hash );
			$status = 201;
		} else {
			$this->writer->update_profile( $user, $data, in_array( 'email', $apply, true ) && ! self::keeps( $event, 'email' ), in_array( 'profile', $apply, true ), $match );
		}
		$this->writer->write_hash( $user->ID, $hash );
		$this->writer->write_roles( $user->ID, $roles );
		$meta_keys = array();
		foreach ( $apply as $group ) {
			if ( 0 === strpos( $group, 'meta:' ) ) {
				$meta_keys[] = substr( $group, 5 );
			}
		}
		if ( in_array( 'metadata', $actions, true ) ) {
			$this->meta->apply( $user->ID, $data, $meta_keys );
		}
		$map            = UserRelay_Versions::record( $stored, $apply, $versions, array(), $source_wins );
		$map['created'] = UserRelay_Versions::newer( $map['created'] ?? UserRelay_Facts::MIN_VERSION, $created );
		UserRelay_Stored_Versions::store( $user->ID, $map );
		foreach ( $apply as $group ) {
			$this->observed[] = $versions[ $group ] ?? UserRelay_Facts::MIN_VERSION;
		}
		if ( isset( $event['occurred_at'] ) && is_numeric( $event['occurred_at'] ) ) {
			UserRelay_Modified::record( $user->ID, (float) $event['occurred_at'] );
		}
		return array( $status, $user->ID );
	}

	/**
	 * Creates the user a delivery names but this site lacks, if the event may create them.
	 *
	 * @param array         $event   The event.
	 * @param array         $data    The event's user.
	 * @param string[]      $actions The event's actions.
	 * @param string[]|null $roles   The roles that follow, if any.
	 * @param string|null   $hash    The password hash that follows, if any.
	 * @throws UserRelay_Apply_Exception When the event may not create, or WordPress refuses.
	 */
	private function create_missing( array $event, array $data, array $actions, ?array $roles, ?string $hash ): WP_User {
		if ( ! in_array( 'create', $actions, true ) && empty( $event['create_missing'] ) ) {
			throw new UserRelay_Apply_Exception( sprintf( 'no user with email %1$s or login %2$s here, and create_missing is false', $data['email'], $data['login'] ), 404 );
		}
		$user          = $this->writer->create( $data, $actions, null !== $roles, null !== $hash );
		$this->touched = $user->ID;
		return $user;
	}

	/**
	 * Whether the delivery says to keep this field of a user held here as it is (its "keep":
	 * a link whose fields leave out email sends it for matching only). A user the delivery
	 * creates gets it anyway: an account needs one.
	 *
	 * @param array  $event A checked event.
	 * @param string $field A field of the user.
	 */
	private static function keeps( array $event, string $field ): bool {
		return isset( $event['keep'] ) && is_array( $event['keep'] ) && in_array( $field, $event['keep'], true );
	}

	/**
	 * The field groups a delivery carries, from its actions.
	 *
	 * @param string[] $actions The event's actions.
	 * @param array    $data    The event's user.
	 * @return string[]
	 */
	private static function carried_groups( array $actions, array $data ): array {
		$groups = array();
		if ( array_intersect( array( 'create', 'edit' ), $actions ) ) {
			$groups[] = 'profile';
			$groups[] = 'email';
		}
		foreach ( array( 'password', 'roles' ) as $group ) {
			if ( in_array( $group, $actions, true ) ) {
				$groups[] = $group;
			}
		}
		if ( in_array( 'metadata', $actions, true ) ) {
			$keys = array_merge( array_keys( isset( $data['meta'] ) && is_array( $data['meta'] ) ? $data['meta'] : array() ), isset( $data['meta_deleted'] ) && is_array( $data['meta_deleted'] ) ? $data['meta_deleted'] : array() );
			foreach ( array_unique( array_map( 'strval', $keys ) ) as $key ) {
				$groups[] = 'meta:' . $key;
			}
		}
		return $groups;
	}
}
